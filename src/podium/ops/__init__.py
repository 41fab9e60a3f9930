"""Operations: Prometheus metrics, the OpenAPI document and its docs page."""
