"""Rebuilding records from the host, and copies of the platform's state.

plan.py       pure: what the host shows (an `Inventory`) and what the database holds (`Known`) → a `RecoveryPlan`
inventory.py  what this host's drivers observe and what the database holds, gathered for `plan`
apply.py      a plan written as rows (adds only: never deletes a row or a host object)
backup.py     `meshvisor backup` / `meshvisor restore`: one archive of the database, CA, tokens and stack key
"""
