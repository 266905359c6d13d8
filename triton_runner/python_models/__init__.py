"""Python-backend models that the CPU rendering links into a repository as `<model>/1/model.py`."""
