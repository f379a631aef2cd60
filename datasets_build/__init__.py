"""datasets_build package."""
