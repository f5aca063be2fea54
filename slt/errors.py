"""One error type for bad user input: its message is one line naming the field and what is allowed."""


class InputError(ValueError):
    """Bad user input (config field, data directory, data file). The CLI prints it and exits 2."""

    def __init__(self, field: str, problem: str):
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")
