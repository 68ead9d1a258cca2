"""kdgat_core.models"""
