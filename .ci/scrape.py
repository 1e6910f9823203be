"""
Scrape a hellotcp /metrics page and require at least one greeted exchange
(run by .ci/run with the fresh clone's Python, which has the metrics extra).
"""

import sys
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

with urllib.request.urlopen(sys.argv[1], timeout=5) as response:
    text = response.read().decode()
greeted = sum(
    sample.value
    for family in text_string_to_metric_families(text)
    for sample in family.samples
    if sample.name == "hellotcp_exchanges_total"
    and sample.labels.get("outcome") == "greeted"
)
if greeted < 1:
    sys.exit(f"no greeted exchange on {sys.argv[1]} yet")
print(f"scraped {sys.argv[1]}: {greeted:g} greeted", file=sys.stderr)
