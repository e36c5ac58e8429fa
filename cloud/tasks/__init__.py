"""Task bundles: publishing, signing, versions."""
