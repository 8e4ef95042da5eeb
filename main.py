"""facenet command line from a source checkout: `python main.py …` is the installed `facenet` command.

    python main.py -t True -e 20 -m 0.5          # fine-tune on data/<person>/ photos
    python main.py -t False -wc True             # live webcam
    python main.py -t False -wc False --input X  # photos, folders, videos
    python main.py --verify=A.jpg,B.jpg          # 1:1 verification
    python main.py --lfw_pairs P --lfw_dir D     # LFW-protocol benchmark

The same jobs as commands: `python main.py recognize | enroll | verify | train | lfw | serve [flags]`
(`python main.py <command> --help`: its flags). The commands live in facenet/cli/ (commands.py, app.py); this file
only starts them.
"""

from __future__ import annotations

from facenet.cli import main

__all__ = ["FLAGS", "main"]  # noqa: F822 - FLAGS comes from __getattr__


def __getattr__(name: str) -> object:
    """`main.FLAGS`, imported on first use (so start-up stays inside main()'s Ctrl-C handling)."""
    if name == "FLAGS":
        from facenet.cli import FLAGS

        return FLAGS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

if __name__ == "__main__":
    main()
