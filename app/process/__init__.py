"""What a serving process does to itself: its HTTP protocol (slow clients dropped), its open
files limit, its memory."""
