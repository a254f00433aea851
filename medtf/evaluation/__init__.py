"""medtf.evaluation"""
