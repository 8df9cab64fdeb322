"""kd-exam: which student is best? Knowledge distillation of task-specific BERT teachers on IndoNLU."""
__version__ = "0.1.0"
