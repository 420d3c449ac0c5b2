"""EdgeGen's build side: train, prune, distill, quantize, export and evaluate; writes bundles."""
