"""Data layer: load, clean, corrupt and partition instruction data (see CONTRACT.md).

Entry points: client_data.load_client_data / load_eval_data. Submodules are imported where
used, so importing this package stays cheap.
"""
