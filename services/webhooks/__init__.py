"""The webhooks service: POSTs a job's events to the URL its submitter gave, signed per Standard Webhooks."""
