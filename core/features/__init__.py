"""Image encoders (VGG16, the shapes CNN) and the PCA that reduces their features to 512-d."""
