"""Running pipeline specs in the cloud: the device's pipelines over uploaded event batches."""
