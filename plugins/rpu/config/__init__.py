"""Configuration: the region file (``region.toml``), SMTP settings, the machine's sizing.
"""
