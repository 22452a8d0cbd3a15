# Chart axes have room for a short month: "Nov 1" (Django's English default is "November 1").
MONTH_DAY_FORMAT = "M j"
