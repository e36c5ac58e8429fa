"""CoDA: cloud sample pools that devices retrieve similar samples from for on-device learning."""
