"""Generated from proto/mmsearch/v1 by ``make proto``; do not edit (tests/test_proto.py checks they match)."""
