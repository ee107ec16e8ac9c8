"""Finding data on disk (no database): what a found file is, scanning data paths, their health, watching them."""
