"""Thin shim: see `python predict.py --help`, or keras_fer/cli/predict.py."""
from keras_fer.cli.predict import main

raise SystemExit(main())
