"""Image encoders (VGG16, the shapes CNN) and the PCA that reduces their features to 512-d; image preprocessing for
them, and CS231n's pixel helpers (``pixels``: ImageNet normalisation and back, a gentle blur)."""
