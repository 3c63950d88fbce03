"""Where data comes from before the pipeline sees it: the handbook simulator (population,
scenarios, files), drift and corruption on demand, and the importer of a real history.
"""
