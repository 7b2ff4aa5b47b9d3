"""Thin shim: see `python train.py --help`, or keras_fer/cli/train.py."""
from keras_fer.cli.train import main

raise SystemExit(main())
