"""Dataset loaders: real data at local paths, and small real data the kit ships or makes."""
