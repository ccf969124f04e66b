"""Billing: prices jobs in points, reserves them before GPU work, captures or refunds at the end."""
