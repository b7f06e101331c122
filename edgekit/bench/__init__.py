"""The bench stage: bundles × runtimes (`run`), robust timing (`timing`), tables and plots (`report`)."""
