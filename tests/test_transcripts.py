"""The conversation a new Realtime session goes on from (`Transcripts.said` / `so_far`)."""
from services.transcripts import MAX_REPLAYED_TURNS, Transcripts


def test_the_conversation_so_far_is_the_latest_turns_oldest_first():
    transcripts = Transcripts()
    for n in range(MAX_REPLAYED_TURNS + 5):
        transcripts.said("user" if n % 2 else "assistant", f"turn {n}")
    so_far = transcripts.so_far()
    assert len(so_far) == MAX_REPLAYED_TURNS
    assert so_far[0] == ("user", "turn 5")
    assert so_far[-1][1] == f"turn {MAX_REPLAYED_TURNS + 4}"
    assert [int(text.split()[1]) for _, text in so_far] == list(range(5, MAX_REPLAYED_TURNS + 5))


def test_empty_turns_are_not_part_of_it():
    transcripts = Transcripts()
    transcripts.said("user", "")
    transcripts.said("assistant", "שלום")
    assert transcripts.so_far() == [("assistant", "שלום")]
