"""kdgat_core.slurm"""
