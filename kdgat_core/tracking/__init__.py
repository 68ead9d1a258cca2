"""kdgat_core.tracking"""
