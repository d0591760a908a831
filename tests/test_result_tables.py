"""The results tables of the docs are rendered from the committed JSON: every page and report file matches
what its JSON renders to now, a changed number is caught, every marker names a known table, and the
committed dev baselines are what the GLUE dev files give."""

import json

import pytest

from basics.errors import UserError
from experiments import result_tables
from experiments.baselines import BASELINES_FILE, baselines_report
from experiments.phase_transition import markdown
from mtl.config import TrainConfig


def test_every_table_matches_its_json():
    stale = result_tables.stale()
    assert stale == [], ("tables differ from their JSON (run python -m experiments.result_tables): "
                         + ", ".join(str(p.relative_to(result_tables.REPO)) for p in stale))
    assert result_tables.main(["--check"]) == 0


def test_every_table_is_on_a_page_and_every_page_table_is_known():
    used = [name for page in result_tables.pages() if page.is_file()
            for name in result_tables.table_names(page.read_text(encoding="utf-8"))]
    assert set(used) == set(result_tables.TABLES)
    assert {"glue", "results-summary", "phase-summary", "lottery-mrpc", "iterative-rte"} <= set(used)
    readmes = sorted(result_tables.RESULTS.glob("*/README.md"))
    tables_per_readme = {p.parent.name: result_tables.table_names(p.read_text(encoding="utf-8")) for p in readmes}
    assert all(tables_per_readme[name] for name in ("cpu_study", "phase_transition", "lottery",
                                                    "iterative_pruning", "analysis", "single_task_quality"))


def test_a_changed_number_in_a_table_is_caught(tmp_path, monkeypatch):
    page = result_tables.RESULTS / "lottery" / "README.md"
    text = page.read_text(encoding="utf-8")
    assert result_tables.render_page(text) == text
    edited = text.replace("| 56.32 ± 2.04 | yes |", "| 57.32 ± 2.04 | yes |", 1)  # RTE OMP 0.6, hand-edited
    assert edited != text and result_tables.render_page(edited) == text
    # the check names the page
    copy = tmp_path / "README.md"
    copy.write_text(edited, encoding="utf-8")
    monkeypatch.setattr(result_tables, "pages", lambda: [copy])
    monkeypatch.setattr(result_tables, "files", lambda: {})
    assert result_tables.stale() == [copy]
    assert result_tables.main(["--check"]) == 1
    assert result_tables.write_all() == [copy] and copy.read_text(encoding="utf-8") == text


def test_a_report_file_that_drifts_from_its_json_is_caught():
    files = result_tables.files()
    md = result_tables.RESULTS / "phase_transition" / "stsb" / "phase_transition.md"
    assert md in files and files[md]() == md.read_text(encoding="utf-8")
    report = json.loads(md.with_suffix(".json").read_text(encoding="utf-8"))
    report["rows"][0]["dev_mean"] += 1.0  # the JSON says something else now: the rendering changes
    assert markdown(report, result_tables.baselines()) != md.read_text(encoding="utf-8")


@pytest.mark.parametrize("text, message", [
    ("<!-- table: nope -->\nx\n<!-- /table -->\n", "unknown table 'nope'"),
    ("<!-- table: glue -->\nx\n", "1 '<!-- table: NAME -->' markers but 0"),
])
def test_bad_markers_are_one_line_errors(text, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(")):
        result_tables.render_page(text)


def test_a_marker_inside_a_sentence_is_text():
    text = "See the `<!-- table: glue -->` markers.\n"
    assert result_tables.render_page(text) == text


@pytest.mark.integration
def test_committed_dev_baselines_come_from_the_glue_dev_files(glue):
    committed = json.loads(BASELINES_FILE.read_text(encoding="utf-8"))
    tasks = list(committed["tasks"])
    fresh = baselines_report(TrainConfig.of(tasks=tasks, glue_dir=str(glue)), tasks)
    assert json.loads(json.dumps(fresh["tasks"])) == committed["tasks"]
    assert committed["tasks"]["rte"]["n"] == {"dev": 277} and committed["tasks"]["rte"]["constant"] == "entailment"
