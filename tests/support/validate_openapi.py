"""Validates an OpenAPI document (path or '-' for stdin) against the
OpenAPI 3.1 specification with openapi-spec-validator; exits 1 with the
first error."""
import json
import sys

from openapi_spec_validator import validate
from openapi_spec_validator.validation.exceptions import OpenAPIValidationError

src = sys.stdin if sys.argv[1] == "-" else open(sys.argv[1])
doc = json.load(src)
try:
    validate(doc)
except OpenAPIValidationError as e:
    print(f"invalid: {e}", file=sys.stderr)
    sys.exit(1)
print(f"valid OpenAPI {doc.get('openapi')}: {len(doc.get('paths', {}))} paths")
