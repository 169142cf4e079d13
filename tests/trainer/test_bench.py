from trainer.bench import main


def test_bench_times_our_loop_and_the_reference(capsys):
    main(["--arch", "WRN-10-1", "--dataset", "digits", "--batch-size", "8", "--batches", "1",
          "--device", "cpu"])
    out = capsys.readouterr().out
    assert "clean training" in out and "PGD-10 AT" in out and out.count("img/s") == 4
