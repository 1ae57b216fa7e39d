"""Helpers the tests of both tiers import: small projects and teachers, Label Studio servers and data, files in
other tools' formats."""
