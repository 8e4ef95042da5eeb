"""Face detection: the face records (the detector's `Face`, the `Recognition` it becomes once named), the box
convention and the `Detector` protocol (`face`), dlib's HOG/CNN (`dlib`) and OpenCV Zoo's YuNet (`yunet`) behind it,
the factory by name (`registry`), and the landmark geometry that aligns chips (`align`). Nothing is imported here, so
`facenet.detect.face` stays light."""
