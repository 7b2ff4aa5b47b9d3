"""Thin shim: see `python visualize.py --help`, or keras_fer/cli/visualize.py."""
from keras_fer.cli.visualize import main

raise SystemExit(main())
