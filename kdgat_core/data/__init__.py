"""kdgat_core.data"""
