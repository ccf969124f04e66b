"""The gateway's HTTP routes, one router per area: sessions, the account, jobs, the page and documents."""
