"""The secret canaries every URL form carries (test_secrets and the Prefect canary in test_sweep_flow).

Each canary is one token in upper case, found by that token whether a log quotes it percent-encoded
or decoded. '%40' is '@': SQLAlchemy splits the userinfo at the first literal '@', so a password
holding one must be percent-encoded to connect at all (masking handles a literal one too).
"""

USERINFO_PW = "pw/CANARYUSERINFO%40x:1"
QUERY_PW = "CANARYQUERY-8888"
MLFLOW_PW = "pw/CANARYMLFLOW-7"
CANARIES = ("CANARYUSERINFO", "CANARYQUERY", "CANARYMLFLOW")
