# "11月1日": Django's zh-Hans default ("m月j日") pads the month to "05月3日", which Chinese dates do not do.
MONTH_DAY_FORMAT = "n月j日"
