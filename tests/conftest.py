import os

# Quiet TensorFlow and keep tf.data from auto-tuning threads in many short fits.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("MPLBACKEND", "Agg")
