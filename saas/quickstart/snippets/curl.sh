API="${SPACY_API_URL:-http://127.0.0.1:8000}"
KEY="${SPACY_API_KEY:-<demo key>}"

# Entities of one text
curl -s "$API/v1/en_core_web_sm/entities" \
  -H "Authorization: Token $KEY" -H "Content-Type: application/json" \
  -d '{"text": "John Doe is a Go developer at Google in London."}'
echo

# A batch: one result per text, in order; each text counts as one request.
# -i prints the answer's headers too: X-RateLimit-Limit, -Remaining and -Reset.
curl -si "$API/v1/en_core_web_sm/entities/batch" \
  -H "Authorization: Token $KEY" -H "Content-Type: application/json" \
  -d '{"texts": ["Angela Merkel met Emmanuel Macron in Berlin.",
                 "Apple is looking at buying U.K. startup for $1 billion."]}'
echo
