"""resnetlab: train, evaluate and run ResNet image classifiers."""

__version__ = "0.1.0"
