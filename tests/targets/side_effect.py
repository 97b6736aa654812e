"""Leaves a file named "ran" in the working directory: proof that it ran."""

with open("ran", "w") as f:
    f.write("ran\n")
