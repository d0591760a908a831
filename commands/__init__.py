"""The command-line entry points (``mtl-train``, ``mtl-construct-mask``, ``mtl-compact``): thin ``main()``s
over the packages. The studies' entry points are in ``experiments/`` (``python -m experiments.X``)."""
