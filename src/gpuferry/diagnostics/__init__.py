"""Diagnostics: `gpuferry doctor` checks every stage a job depends on."""
