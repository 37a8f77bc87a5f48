"""Operations: health, metrics, monitoring, error tracking and logs."""
