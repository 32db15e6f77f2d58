"""The search pipeline: activation and routes (which config serves), the stage runner, retrieval, fusion, ranking, filters and pages."""
