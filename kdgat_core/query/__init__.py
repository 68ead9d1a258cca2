"""kdgat_core.query"""
