"""EdgeGen's operator side: device classes, inventories, and the fleet's state."""
