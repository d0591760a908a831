"""Structured lottery tickets: gates, importance scores, masks, tickets, aggregation."""
