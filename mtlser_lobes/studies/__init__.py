"""Cross-validated studies: cells and launchers, the experiment identity, classical floors."""
