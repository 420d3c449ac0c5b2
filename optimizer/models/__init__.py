"""One model definition per family."""
