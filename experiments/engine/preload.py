"""Imported once by the local backend's fork server, so a worker starts with these modules loaded:
torch, transformers' Auto classes and the model and tokenizer code of every supported family, and the
training code. A fork then costs milliseconds instead of seconds of imports per run. Importing this
module only imports modules; it changes no state."""

from transformers import AutoConfig, AutoModel, AutoTokenizer  # noqa: F401
from transformers.models.bert import modeling_bert, tokenization_bert  # noqa: F401
from transformers.models.distilbert import modeling_distilbert  # noqa: F401
from transformers.models.electra import modeling_electra  # noqa: F401
from transformers.models.roberta import modeling_roberta  # noqa: F401

import experiments.engine.worker  # noqa: F401
import mtl.run  # noqa: F401
