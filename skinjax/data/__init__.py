"""Everything before the device: sources, splits, the grain pipeline, augmentation."""
