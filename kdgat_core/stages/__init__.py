"""kdgat_core.stages"""
