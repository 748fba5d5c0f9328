"""Query in, Decision out: scoring, the decision rule, the learned head's use, conversations."""
